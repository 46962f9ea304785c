# Optional CUDA: compile the CUDA targets whenever nvcc is present (even without a GPU),
# unless -DBUPO_CUDA=OFF. cuDNN and NCCL ship no CMake config, so we find them here.
set(BUPO_HAVE_CUDA OFF)
if(NOT BUPO_CUDA)
  return()
endif()
include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  message(STATUS "bupo: nvcc not found, building CPU only")
  return()
endif()
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  # CUDA 13 dropped sm_50..sm_72; Hopper is the target machine, Ampere the common one.
  set(CMAKE_CUDA_ARCHITECTURES 80 90)
endif()
enable_language(CUDA)
set(CMAKE_CUDA_STANDARD 17)  # CMake 3.25 does not know CUDA20 for nvcc
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
find_package(CUDAToolkit REQUIRED)

get_filename_component(_cuda_root "${CUDAToolkit_LIBRARY_DIR}/.." ABSOLUTE)
find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV CUDNN_ROOT PATH_SUFFIXES include)
find_library(CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR} ENV CUDNN_ROOT PATH_SUFFIXES lib lib64)
find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV NCCL_ROOT PATH_SUFFIXES include)
find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} ${_cuda_root}/lib ENV NCCL_ROOT
  PATH_SUFFIXES lib lib64)
foreach(_v CUDNN_INCLUDE_DIR CUDNN_LIBRARY NCCL_INCLUDE_DIR NCCL_LIBRARY)
  if(NOT ${_v})
    message(FATAL_ERROR "bupo: nvcc found but ${_v} is missing; set CUDNN_ROOT/NCCL_ROOT or -DBUPO_CUDA=OFF")
  endif()
endforeach()
add_library(bupo::cudnn UNKNOWN IMPORTED)
set_target_properties(bupo::cudnn PROPERTIES IMPORTED_LOCATION ${CUDNN_LIBRARY}
  INTERFACE_INCLUDE_DIRECTORIES ${CUDNN_INCLUDE_DIR})
add_library(bupo::nccl UNKNOWN IMPORTED)
set_target_properties(bupo::nccl PROPERTIES IMPORTED_LOCATION ${NCCL_LIBRARY}
  INTERFACE_INCLUDE_DIRECTORIES ${NCCL_INCLUDE_DIR})
message(STATUS "bupo: CUDA ${CUDAToolkit_VERSION}, cuDNN ${CUDNN_LIBRARY}, NCCL ${NCCL_LIBRARY}, archs ${CMAKE_CUDA_ARCHITECTURES}")
set(BUPO_HAVE_CUDA ON)
