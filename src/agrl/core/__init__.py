"""The domain core, pure Python (no torch, no TRL): facts from titles and queries (titles, lexicon), the
judge's output format (output) and prompt (prompt), the rules engine (rules), Rule-aware Reward Shaping
(rewards), Adaptive Guided Replay's logic (replay), rules vs human labels (agreement), and the synthetic
benchmark the rules label (catalog, synth). Imports point down: data <- output <- lexicon <- rules <- rewards."""
