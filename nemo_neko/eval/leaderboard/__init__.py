"""The Open ASR Leaderboard in one command: :mod:`.pipeline` (stages), :mod:`.sets`,
:mod:`.recognize` (first pass, N-best), :mod:`.compare` (the side-by-side table), :mod:`.cli`."""
