"""``python -m worker_app`` runs the operator CLI."""

from worker_app.cli import main

main()
