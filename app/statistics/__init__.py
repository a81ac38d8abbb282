"""The methods of a reader study, as pure functions on numbers: the randomised design (design.py), accuracy and
agreement (agreement.py), the multi-reader multi-case comparison (mrmc.py), the dashboard's numbers from the
long-format reads (results.py) and its plots (plots.py). numpy, scipy, scikit-learn, statsmodels and
matplotlib; no web framework, no database, no other part of Lumen (an import-linter contract, .importlinter)."""
