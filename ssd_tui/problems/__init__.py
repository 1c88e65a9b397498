"""Problem sets: HumanEval, our JSONL format, LeetCode; problem -> prompt, answer -> program."""
