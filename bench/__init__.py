"""callq's benchmark suite: ``callq bench [--quick] [--only NAME ...]`` (see ``bench/suite.py``).

Every scenario measures callq and a baseline in the same run and reports their ratio; nothing here
asserts a timing. ``bench/sim_capacity.py`` is also a stand-alone script.
"""
