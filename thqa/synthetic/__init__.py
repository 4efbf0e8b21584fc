"""Self-made talking heads and degradations with known quality, and the offline demo built from them."""
