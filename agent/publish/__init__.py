"""The parts of the MQTT publisher (agent.publisher.Publisher puts them together): the reconnect schedule
(backoff), one connection and its session (session), the delivery pump (pump) and parking of messages the broker
will not take (parking)."""
