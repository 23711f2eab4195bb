from tests.factories import make_invoice


def test_factories_build_a_valid_invoice(db):
    invoice = make_invoice(db)
    db.commit()
    assert invoice.total_minor == 12000
    assert invoice.balance_minor == 12000
