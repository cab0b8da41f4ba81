"""Is a predicted std worth anything, and by what factor should it be scaled?

Split along the seams of the work, each module importing only those above it in this list:

* :mod:`~drugcell.calibration.stats`: array-level statistics (coverage, the variance-matching
  scale, std-vs-error correlation, reliability by std quantile) and the Gaussian ideals;
* :mod:`~drugcell.calibration.grouping`: a CV run's uncertainty samples cleaned and grouped by
  (predictor, fold), with every scale fitted out of fold;
* :mod:`~drugcell.calibration.calibrator`: :class:`~drugcell.calibration.calibrator.Calibrator`,
  the fitted scale as an object that is saved (JSON) with a run or a model and applied at submission;
* :mod:`~drugcell.calibration.report`: markdown, plots and ``drugcell calibrate`` on a run folder.

Nothing is re-exported here: import from the module that owns a name.
"""
