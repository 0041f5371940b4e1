"""Text -> word pieces: the reference-exact WordPiece tokenizer and vocab learning."""
