"""Running Linli's processes under supervisord (`make run`): its configuration made from the
Procfile, and two event listeners (the terminal's log, restart back-off)."""
