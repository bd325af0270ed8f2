"""The MERT network: HuBERT backbone (conv extractor, positional conv, encoder) and pretraining
heads."""
