"""What the tests and the benchmarks both drive: real server processes, load generators, the images that
attack a decoder or stand for users' pictures, and the comparator that judges a benchmark's targets.

Installed with the project (no torch): the tests import it, and bench/ builds its scripts on it.
"""
