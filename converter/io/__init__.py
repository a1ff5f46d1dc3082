"""Readers and writers of Caffe's file formats."""
