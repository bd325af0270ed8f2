"""Interchange with Hugging Face transformers (HubertModel folders, published MERT weights)."""
