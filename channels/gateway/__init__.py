"""The conversation gateway: every text channel (the chat CLI, the resident web chat, WeChat)
reaches the dialogue through it, and it keeps the bot quiet while staff have a conversation.

| file | concern |
|---|---|
| settings.py | one Settings object from the environment |
| service.py | the message flow: record, then forward (bot) or stay quiet (staff), emergencies |
| resume.py | giving the conversation back to the bot once a hand-over ends, exactly once |
| delivery.py | the API's event stream: staff replies, state changes, wake-ups |
| webchat.py + static/chat/ | the resident web chat at /chat/ |
| api.py | the generic JSON endpoint for channels that cannot push (the chat CLI) |
| dialogue.py | the Rasa server's HTTP API |
| store.py, wake.py | what the gateway keeps in Redis; waking open pages across instances |
| app.py, deps.py, errors.py | the ASGI app, its dependencies and error shape |
"""
