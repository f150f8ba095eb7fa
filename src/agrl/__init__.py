"""agrl: LLM judges of e-commerce search relevance trained with Adaptive Guided RL.

Pipeline: data -> rules -> output -> rewards -> train -> evaluate -> score -> cli.
"""

__version__ = "0.1.0"
