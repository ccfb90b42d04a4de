//! Classifying stored entries into a report. (Skeleton.)
