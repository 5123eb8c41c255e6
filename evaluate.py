"""Evaluate a checkpoint or a prediction folder (WIDER FACE protocol); see model/evaluate.py."""
from cli import run_main
from model.evaluate import main

if __name__ == "__main__":
    run_main(main)
