"""Small shared pieces with no dependencies on the rest of nemo_neko: JSONL reading and atomic
writing, progress meters, log set-up."""
