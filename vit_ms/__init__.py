"""vit-ms: Vision Transformers for MindSpore. The layout is in README.md ("How the code is laid out");
settings flow config -> variants/runtime -> plan, and everything else reads the plan."""
