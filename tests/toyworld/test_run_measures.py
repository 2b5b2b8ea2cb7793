"""The claims' score records (toyworld.run_measures): one list per annotated measure, summarised by the mean."""
import math

from fusedream_pack.fusedream_ops.toyworld.claims_composition import RowScores
from fusedream_pack.fusedream_ops.toyworld.claims_ovi import OviScores
from fusedream_pack.fusedream_ops.toyworld.measure import MethodScores


def test_each_record_starts_with_its_own_empty_lists_and_summarises_means_in_declaration_order():
    """Reverted on a scratch copy: the lists shared through the class (one run then showed in every record) and
    the summary rounding to 2 places; both failed here."""
    a, b = RowScores(), RowScores()
    a.exact += [True, False, True]
    a.augclip += [0.25, 0.5]
    assert b.exact == [] and RowScores.measures() == list(a.summary())
    assert list(a.summary()) == ["exact", "colour_and_cell", "found", "augclip", "lpips", "seam", "seconds"]
    summary = a.summary()
    assert summary["exact"] == 0.6667 and summary["augclip"] == 0.375 and math.isnan(summary["lpips"])


def test_a_measure_no_run_filled_reads_as_each_record_always_read_it():
    """The composition rows' means of nothing are NaN (``single`` has no ℓ_Fuse, printed "—"); the OVI and generation
    rates of nothing are 0, as before the records shared a base. Reverted on a scratch copy: NO_RUNS = 0.0 dropped
    from MethodScores; failed here."""
    assert math.isnan(RowScores().summary()["seam"])
    assert set(OviScores().summary().values()) == {0.0} and "embeds" not in OviScores().summary()
    m = MethodScores()
    assert (m.success_rate, m.colour_and_cell_rate, m.mean_augclip, m.mean_clip) == (0.0, 0.0, 0.0, 0.0)
    m.successes += [True, False]
    m.clip += [0.5]
    assert (m.success_rate, m.mean_clip) == (0.5, 0.5)
