"""edgekd: tiny distilled audio classifiers on the device, results over MQTT."""

__version__ = "0.1.0"
