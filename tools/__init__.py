"""The dataset tools' command lines (`python tools/convert.py ...`, run from the repository
root); each is thin: it parses its flags and calls the library code in `data/`."""
