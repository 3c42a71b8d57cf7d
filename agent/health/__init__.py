"""Health of the room PC and of the agent: host figures, clock state, equipment states of the agent's own devices,
readiness and liveness checks, the periodic `health` sample and systemd notification.

`agent.health.wiring.add_operations` adds all of it (with the web server and the command topic) to a built agent.
"""
