"""The web console's static files (``static/``), served at ``/ui/`` by ``http/handlers/console.py``."""
