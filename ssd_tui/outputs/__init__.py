"""What leaves a run: reports, exports, TensorBoard event files."""
