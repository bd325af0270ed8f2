"""MERT's audio contract, defined once: 24 kHz mono audio with a teacher label every 320 samples.

The model's extractor strides (product 320), the teachers' hop, the prepared datasets' manifests and
the trainer's checks all refer to these numbers; nothing else writes them out.
"""

SAMPLE_RATE = 24000  # Hz
HOP = 320  # samples per label frame: SAMPLE_RATE / HOP = 75 Hz
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")
