"""``python -m worker_app`` runs the operator CLI."""

from worker_app.cli.main import main

main()
