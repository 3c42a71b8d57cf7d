"""Remote checks over MQTT 5 request/response on `{prefix}/{site}/{room}/cmd`: a fixed allow-list of commands
(agent.commands.handlers.COMMANDS), answered on the request's ResponseTopic with its CorrelationData. No shell, no file
access: each command is a Python function over the agent's live state.
"""
