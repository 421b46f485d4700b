"""Hugging Face names that Whisper code refers to by name (one definition; the rest of tarq imports these)."""
TOKEN_EMBEDDING = "model.decoder.embed_tokens.weight"
OUTPUT_PROJECTION = "proj_out.weight"
# proj_out is the token embedding (tied): it is quantized and stored once, as the embedding.
TIED = {OUTPUT_PROJECTION: TOKEN_EMBEDDING}
