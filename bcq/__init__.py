"""bcq: 4-bit LLM arithmetic you can trust.

The installed import names are namespaced under ``bcq``; the source folders keep the layout
the project was asked for. Layers, lowest first (each imports only from those below it; an
import-linter ``layers`` contract in ``make test`` keeps it so):

(a) ``bcq.sw.formats``  (``sw/formats/``)  format config, numerics, LO-BCQ, codebooks, baselines,
    Ax-BxP model, golden model;
(b) ``bcq.sw.contract`` (``sw/contract/``) the hardware/host contract: beat geometry, beat layouts
    and their packers, image layout, link protocol;
(c) ``bcq.sw.host``     (``sw/host/``)     image writer/reader, board driver, model loading;
(d) ``bcq.hw``          (``hw/``)          gateware, Verilog export, the unit registry;
(e) ``bcq.sim``         (``sim/``)         simulation, formal and synthesis runners, testbenches;
(f) ``bcq.cli``, ``bcq.demo`` (this folder) and ``bench/``: the front.
"""
