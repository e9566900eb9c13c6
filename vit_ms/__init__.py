"""vit-ms: Vision Transformers for MindSpore. The layout is in README.md ("Code layout");
settings flow config -> variants/runtime -> plan, and everything else reads the plan."""
