// The active kernel table: chosen once from the CPU and FASTSOFTMAX_ISA, replaceable by name.
#pragma once

#include <string>
#include <vector>

#include "kernels.h"

namespace fastsoftmax {

// The table in use; the first call picks it (thread-safe).
const KernelTable& active_kernels();

// Names of the tables this CPU can run, best last.
std::vector<std::string> available_isas();

// Makes the named table active; returns false (and changes nothing) if it cannot run here.
bool select_isa(const std::string& name);

// The warning raised while choosing from FASTSOFTMAX_ISA, or "" (read once, after the choice).
std::string selection_warning();

}  // namespace fastsoftmax
