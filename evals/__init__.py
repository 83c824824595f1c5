"""The evaluation of a finished run: held-out answers of base and adapter, judged; general ability kept;
a verdict."""
