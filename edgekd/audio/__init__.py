"""Audio in: decoding files, live sources, the capture ring buffer and window cutting."""
