"""`python -m voice.sip --port 5062 --wav hello.wav --seconds 20`: the echo demo (echo_app.py)."""

from voice.sip.echo_app import main

main()
