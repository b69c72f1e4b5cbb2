"""GGUF files (llama.cpp, whisper.cpp, stable-diffusion.cpp): read without the ``gguf``
package."""
