"""The judge as a model: load a checkpoint or adapter and generate (load.py), build the tiny local judge and its
tokenizer (tiny.py), import a pretrained GGUF (pretrained.py), and score pairs from one prefill pass (score.py,
`agrl score`)."""
