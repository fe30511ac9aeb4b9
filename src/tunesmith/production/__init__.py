"""Around the engine, what producers ask for: exact tempo, bars, loops, key, endings.

plan.py        the request's fields (`Production`) and how much audio they need; torch-free
produce.py     the generated audio made to them (`produce`), with what the analysis found
tempo.py       beats and tempo (librosa), near the tempo asked for
key.py         keys: parsed, estimated (Krumhansl-Kessler profiles), the shift between
grid.py        the first downbeat, exact bars, seamless loops, fades
rubberband.py  time-stretch and pitch-shift through Rubber Band's command-line tool
"""

from tunesmith.production.plan import Production

__all__ = ["Production"]
