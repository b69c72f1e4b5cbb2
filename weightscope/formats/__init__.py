"""Format readers: each turns one kind of file (or live object) into the framework-free
:class:`weightscope.model.Model`. ``protocol`` says what a reader offers, ``registry`` opens a
file once and hands it to the reader that matches it; ``keras/``, ``pytorch/`` and ``onnx/``
are one subpackage per framework, ``safetensors`` a format of its own, and ``_common/`` holds
what several readers share (file regions, zip members, bounded JSON). Nothing outside this
package asks which framework wrote a file."""
