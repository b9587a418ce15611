"""The suite: :mod:`tests.unit`, :mod:`tests.integration` and :mod:`tests.helpers`."""
