"""Audio corpus -> 24 kHz -> teacher tokens -> TFRecord shards -> grain (issue 4, not built yet)."""
