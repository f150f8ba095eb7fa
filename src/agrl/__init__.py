"""agrl: LLM judges of e-commerce search relevance trained with Adaptive Guided RL.

Packages, one per layer, imports pointing down: data -> core (rules, format, rewards) -> model ->
train -> evaluation -> serve, sbs -> run -> cli.
"""

__version__ = "0.1.0"
