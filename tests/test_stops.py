from minime.backends._stops import StopStringFilter


def run(pieces, stops):
    stream = StopStringFilter(stops)
    out = []
    for piece in pieces:
        out.append(stream.feed(piece))
        if stream.stopped:
            break
    else:
        out.append(stream.flush())
    return "".join(out), stream.stopped


def test_stop_split_across_pieces_is_never_emitted():
    assert run(["Hello <|", "end", "|> more"], ["<|end|>"]) == ("Hello ", True)


def test_held_back_prefix_is_released_when_it_is_not_a_stop():
    assert run(["a <", "b"], ["<|end|>"]) == ("a <b", False)


def test_no_stops_passes_everything():
    assert run(["x", "y"], []) == ("xy", False)


def test_earliest_stop_wins():
    assert run(["one. two\n\nthree"], ["\n\n", "two"]) == ("one. ", True)
