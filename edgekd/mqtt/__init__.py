"""MQTT out: broker URLs, the publisher, the embedded broker and the listener."""
