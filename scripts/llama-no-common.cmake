# Included into llama.cpp's CMake project when scripts/_local_llm compiles
# llama-cpp-python (CMAKE_PROJECT_llama.cpp_INCLUDE): llama-cpp-python forces llama.cpp's
# "common" library on, but its Python package loads only libllama and libggml. Without
# common (and the HTTP library only common uses) the compile takes half the CPU time.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama.cpp: common utils library (not needed)" FORCE)
