// Any axis of a C-contiguous array as (outer, n, inner).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels.h"

namespace fastsoftmax {

inline Layout layout_of(const std::vector<int64_t>& shape, int64_t axis) {
    Layout lay{1, 1, 1};
    for (int64_t d = 0; d < int64_t(shape.size()); ++d) {
        if (d < axis) lay.outer *= shape[d];
        else if (d == axis) lay.n = shape[d];
        else lay.inner *= shape[d];
    }
    return lay;
}

}  // namespace fastsoftmax
