"""Real parts for tests, benchmarks and first tries, shipped with the package.

random_model.py   MusicGen checkpoints with random weights, saved with `save_pretrained`
                  (``python -m tunesmith.testing.random_model DIR`` makes one to try the server)
random_melody.py  the same for musicgen-melody
seaweed.py        a SeaweedFS S3 server on loopback, and free port pairs
"""
