"""Watch-time models: FM and DeepFM over pre-impression categorical features, trained on the
debiased watch-time labels of ``watch_time_labels`` (PCR, WTG, D2Q, D²Co, raw watch time, CWM).

See docs/training.md. :mod:`trainers.watch_time.trainer` holds the specs of the models
``watch_time_fm`` and ``watch_time_deepfm`` (``SPECS``, listed in ``trainers.registry``).
"""
