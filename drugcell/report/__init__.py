"""`drugcell report RUN`: one self-contained HTML page that shows a CV run at a glance.

Why a package of small modules: reading the run folder (:mod:`.run`), each figure (:mod:`.ranking`,
:mod:`.metric_moves`, :mod:`.calibration`, :mod:`.estimate`), the tables (:mod:`.audit`,
:mod:`.provenance`) and the page itself (:mod:`.page`) change for different reasons. Nothing is
re-exported; the command calls :func:`drugcell.report.page.write_report`.
"""
