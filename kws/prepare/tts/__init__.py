"""`kws prepare --dataset tts`: keywords spoken by synthetic speakers, in Speech Commands layout."""
