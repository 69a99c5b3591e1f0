"""Engine: the evaluator (``vocaseg.engine.evaluator``) and the training loop, checkpoints and
distributed helpers that every method shares."""
