"""Receptive fields of convolutional and attention networks: theoretical (from the graph) and effective (gradient).

**Theoretical field** -- Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks",
Distill 2019, https://distill.pub/2019/computing-receptive-fields/. Per spatial dimension, a layer with
kernel ``k``, dilation ``d`` (span ``k_eff = d (k - 1) + 1``), stride ``s`` and left padding ``p`` maps the field
``(r, j, P)`` of its input (size, jump = effective stride, effective padding) to::

    r_out = r_in + (k_eff - 1) * j_in        j_out = j_in * s        P_out = P_in + p * j_in

and output position ``i`` sees input pixels ``i * j - P`` ... ``i * j - P + r - 1`` (:meth:`RFLayer.box`).

:func:`receptive_field` traces the model with ``torch.fx`` and runs that recursion over the graph:

- **grow** the field: ``Conv{1,2,3}d``, ``MaxPool{1,2,3}d``, ``AvgPool{1,2,3}d`` modules (explorer subclasses
  included, kept whole as one leaf), their functional forms (``F.conv2d``, ``F.max_pool2d``, ``torch.max_pool2d``,
  ``F.avg_pool2d``, ... with their arguments) and ``F.pad`` (a 1-wide window with padding; negative = crop);
- **attend** (op ``"attention"``): self-attention layers -- :class:`explorer.layers.MultiheadAttention`,
  :class:`explorer.layers.LinearAttention` and ``torch.nn.MultiheadAttention``, each kept whole as one leaf --
  grow the field along the sequence axis by their mask's geometry (below);
- **keep** it (op ``"elementwise"``): activations, dropout, ``Identity``, arithmetic with constants, dtype/device
  moves, channel slicing ``x[:, :c]``, ``torch.cat(..., dim=1)`` of one path, normalisation layers, and layers
  acting on the channel axis of tokens (``Linear`` on ``[batch, seq, embed]``, an MLP). Batch, group, instance
  and layer norm are treated as pointwise, as in the published tables: their statistics are per-channel scalars,
  although formally they couple every position to every other;
- **re-lay** it (op ``"layout"``): moving between the conv layout ``[batch, channel, *spatial]`` and the token
  layout ``[batch, seq, embed]`` (below);
- **merge** (op ``"merge"``): the same ops with two or more inputs that depend on the image (residual ``x + f(x)``,
  gating ``a * b``, ``torch.cat([a, b], dim=1)``) take the worst case over paths: the box of the merge is the
  bounding box of the union of its inputs' boxes (start = min, end = max). The inputs must be laid out alike, and
  their effective strides must agree unless one of them already sees the whole input, otherwise no single field
  describes the union and a ``ValueError`` names the node;
- **reduce** (op ``"reduce"``): ``mean`` / ``sum`` / ``amax`` / ``amin`` over every spatial (or sequence) axis,
  e.g. a mean-pooled ViT head: the union of the fields of all positions, i.e. the whole input;
- **refuse** anything else that depends on the image with a ``ValueError`` naming the node and the op: adaptive
  pooling modules (their output grid depends on the input size), ``flatten``/``view``/``Linear`` applied across
  channel and space, interpolation, transposed convolution, spatial indexing, cross-attention whose keys depend on
  the input. Pass the convolutional trunk of such a model (``model.body``, ``model.features``), whose output is
  the last feature map.

**Unbounded fields.** Attention can make a field unbounded: :attr:`RFLayer.size` (and :attr:`RFLayer.padding`)
then hold ``math.inf`` and :meth:`RFLayer.box` returns ``-math.inf`` as the start (the field reaches the first
input position, whatever the input length) and/or ``math.inf`` as the end (it reaches the last one). Clipped to
the image, ``(-inf, inf)`` is the whole input; :attr:`RFLayer.whole_input` says so. Every layer after a
whole-input layer sees the whole input too.

**Attention geometry** (one layer; the sequence axis is the spatial axis of a 1-D input, or the flattened grid of
a 2-D/3-D input):

=====================================  ==============================================================================
mask                                   field of output position ``t`` (in the layer's input positions)
=====================================  ==============================================================================
None / ``full()``                      every position: the whole input (``(-inf, inf)``)
``causal()``                           the prefix ``(-inf, t]``: the last position sees everything
``sliding_window(w)``                  ``t - (w-1)//2 .. t + w//2``: a stride-1 conv of kernel ``w``, ``w - 1`` more
                                       per layer (``1 + L (w - 1)`` for ``L`` layers, as
                                       :func:`attention_receptive_field` predicts); ``causal=True``: ``t - (w-1) ..
                                       t``
``dilated_window(w, d)``               the same with the ``w`` keys ``d`` apart: a conv of kernel ``w``, dilation
                                       ``d``; the box is the bounding box (span ``1 + L d (w - 1)``)
``block_sparse(b, ())``                the block of ``t``: ``b * (t // b) .. b * (t // b) + b - 1`` -- one block of
                                       ``b``, however many such layers are stacked (exact, see *periodic boxes*)
``block_sparse(b, (g, ...))``          the whole input (the global token sees everything after one layer, every
                                       token after two; for a non-global token after one layer this box is a
                                       superset of its block plus the global tokens)
``from_callable``, ``&``, ``|``,       refused (ValueError naming the mask and the node): no geometry to read
``lsh``                                (LSH buckets depend on the input)
=====================================  ==============================================================================

``nn.MultiheadAttention`` (no ``attn_mask``) and non-causal :class:`~explorer.layers.LinearAttention` are full
attention; causal linear attention is causal. A key-padding mask or score bias given as a constant is ignored: it
can only hide keys, so the field is an upper bound. With a 2-D (3-D) input, windowed, causal and block-sparse
masks over flattened patch tokens have no 2-D box and are refused by name; full attention gives the whole image.

**Periodic boxes.** A block-sparse layer's box depends on where a position sits in its block, which one
``(size, stride, padding)`` cannot express. Every field is therefore stored exactly as :attr:`RFLayer.boxes`: the
boxes of outputs ``0 .. g - 1`` (``g`` the period, 1 for convolutions, pooling and windowed attention), output
``m g + q`` seeing ``boxes[q]`` shifted by ``m g j``. ``size`` is the largest box over positions, ``padding``
how far output 0's box starts before input pixel 0.

**Layouts.** Conv and pooling layers read ``[batch, channel, *spatial]``; attention reads ``[batch, seq, embed]``
(``[seq, batch, embed]`` for ``nn.MultiheadAttention(batch_first=False)``). The analysis follows the axes through
``flatten(2)`` (the spatial grid becomes the sequence, row-major), ``transpose`` / ``permute`` / ``swapaxes`` /
``movedim``, ``reshape`` / ``view`` / ``unflatten`` that split the last axis (the sequence) back into the grid,
constant tokens concatenated in front (a ViT's ``[CLS]``: positions keep counting the image's tokens, the
prefix tokens sit before position 0) and sliced off again (``tokens[:, 1:]``), position embeddings added, and
picking one token (``tokens[:, 0]``, only once it sees the whole input). Positions of a token-layout output count
the image's tokens; an output without positions (logits) is given the field of any position (pass zeros). The
model's input is taken as ``[batch, channel, *spatial]`` unless the first layer that cares is an attention layer
(then ``[batch, seq, embed]``), or as ``input_layout`` says.

Padding mode (zeros, reflect, circular) does not change the box: coordinates outside ``[0, size)`` are the padded
border, whatever fills it. Shared modules called twice get one row per call: ``"block"``, ``"block@1"``, ...
A lone conv/pool/attention layer passed as the model is reported under its lower-case class name
(``"conv2d"``, ``"multiheadattention"``). Nodes that do not lead to the returned tensor (dead code) are left out,
and so are values that do not depend on the input (weights, shapes). The input checks of explorer's vision models
(``_check_images``) are traced as pass-through calls.

**Effective field** -- Luo, Li, Urtasun & Zemel, "Understanding the Effective Receptive Field in Deep
Convolutional Neural Networks", NeurIPS 2016, https://arxiv.org/abs/1701.04128. :func:`effective_receptive_field`
back-propagates a one-hot gradient at one output position and reports ``|dy/dx|`` over the input, its centre of
mass, spread and the square radii holding a given share of the mass: roughly Gaussian, its standard deviation
grows like sqrt(depth) while the theoretical size grows like depth.

The package, one module per responsibility (every name below is importable from the package itself):

- :mod:`~explorer.analysis.receptive_field.results`: the result types (:class:`RFLayer`, :class:`ReceptiveField`,
  :class:`EffectiveRF`, :class:`ZeroGradient`) and the periodic box along one axis;
- :mod:`~explorer.analysis.receptive_field.ops`: which modules and functions grow, keep, re-lay, merge or reduce;
- :mod:`~explorer.analysis.receptive_field.dims`: field arithmetic along one axis and the layouts of values;
- :mod:`~explorer.analysis.receptive_field.graph`: the fx tracer, node descriptions, constant arguments, mask geometry;
- :mod:`~explorer.analysis.receptive_field.theoretical`: :func:`receptive_field` and the recursion over the graph;
- :mod:`~explorer.analysis.receptive_field.effective`: :func:`effective_receptive_field`;
- :mod:`~explorer.analysis.receptive_field.attention_stack`: :func:`attention_receptive_field`.
"""

from explorer.analysis.receptive_field.attention_stack import AttentionRF, attention_receptive_field
from explorer.analysis.receptive_field.effective import effective_receptive_field
from explorer.analysis.receptive_field.results import EffectiveRF, ReceptiveField, RFLayer, ZeroGradient
from explorer.analysis.receptive_field.results import Num as Num
from explorer.analysis.receptive_field.theoretical import receptive_field

__all__ = ["RFLayer", "ReceptiveField", "EffectiveRF", "ZeroGradient", "receptive_field", "effective_receptive_field",
           "AttentionRF", "attention_receptive_field"]
