"""`kws prepare`: Speech Commands (download, archive, splits) and the synthesized dataset (tts/)."""
