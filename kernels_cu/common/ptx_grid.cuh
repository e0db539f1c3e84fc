// Grid dependency control (programmatic dependent launch, sm_90): the decode lets the combine launch early, and
// the combine waits for the decode before it reads a partial. Both are no-ops for a grid launched without the
// programmatic-serialization attribute, so a plain cuLaunchKernel stays correct.
// PTX ISA #parallel-synchronization-and-communication-instructions-griddepcontrol
#pragma once

namespace fmla {

// The grids launched after this one with the attribute may be scheduled once every CTA of this grid has
// executed this (or exited). Scheduling only: they still wait below for this grid's results.
__device__ __forceinline__ void allow_dependent_launch() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }

// Blocks until the grids this one depends on have completed and their memory operations are visible.
__device__ __forceinline__ void wait_for_prerequisite_grids() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }

}  // namespace fmla
